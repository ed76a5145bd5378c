"""Experiments: training runs, their saved files and the reports comparing them."""
