"""Quality gates between generation and mixing: sanity, refusal, grounding, dedup, PII, the judge."""
