"""Conveyor: a self-hosted GitOps CI/CD platform."""

__version__ = "0.1.0"
