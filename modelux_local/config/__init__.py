"""Config files: the TOML schema, loading and validation of server and routing configs."""
