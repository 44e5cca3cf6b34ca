"""The taxonomy tree and its knowledge documents, read and chunked."""
