"""The app: what the Snakemake rules run, above the library.

``rules/X.smk`` has its jobs in ``jobs/X.py``, one function per rule with the rule's name
(rule ``counterfactual_shard`` in rules/counterfactuals.smk runs ``dicap counterfactual_shard``,
``dicap.jobs.counterfactuals.counterfactual_shard``).  A job only wires files to library
functions: read, call, write.  Nothing in the library imports this package.
"""
