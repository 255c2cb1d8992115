"""Dagster glue around the plain functions of pipelines/, training/ and evaluation/.

Definitions: pipelines/definitions.py. Main job: `hgpt run` (pipelines/orchestration/main_job.py).
"""
