"""Model monitoring: the training baseline a package carries, the checks of a window of the
prediction log against it (data quality, feature and prediction drift, accuracy from feedback, bias),
and their report.

The checks' statistics are SQL (sagegate.monitoring.sql) that an engine computes over the log:
DuckDB over the local JSON Lines here, the same definitions rendered for Athena in AWS. Modules
import numpy, DuckDB, fairlearn or plotly only where they need them; none of it is the gateway's.
"""
