"""Locust user classes for the tiers of a Plan, and their traffic patterns."""
