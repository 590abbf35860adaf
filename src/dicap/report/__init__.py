"""Tables and figures of the paper, regenerated from per-seed metrics."""
