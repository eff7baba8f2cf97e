"""Tracker model families built on the distilkit toolkit."""
