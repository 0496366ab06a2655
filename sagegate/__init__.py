"""sagegate: a serverless ML inference platform for AWS."""

__version__ = "0.1.0"
