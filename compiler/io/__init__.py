"""Files, YAML, git and names: the edges where kdc touches the disk and untrusted bytes."""
