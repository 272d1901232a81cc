"""Ray wrappers and run orchestrators around backend/, and the client API the CLI and dashboard use."""
