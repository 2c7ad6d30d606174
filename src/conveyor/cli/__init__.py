"""The `conveyor` command line: assembles each component's commands."""
