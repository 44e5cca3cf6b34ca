"""`kdc validate`: schema, lint and extra checks of qna.yaml files, with located verdicts."""
