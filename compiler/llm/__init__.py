"""Everything that talks to a language model: the teacher client, its transport, the embedded model, the cache."""
