"""A small web service used by Conveyor's examples and end-to-end tests."""
