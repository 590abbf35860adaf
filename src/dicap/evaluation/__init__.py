"""Base-to-novel scoring."""
