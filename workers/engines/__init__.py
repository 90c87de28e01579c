"""Engines: plain code that takes images and regions and returns results.

They touch neither the database nor storage, and import their heavy libraries lazily.
"""
