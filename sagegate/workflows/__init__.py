"""Step Functions workflows: their definitions (stepfunctions/*.asl.json) and task code."""
