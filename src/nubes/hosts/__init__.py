"""Compute hosts: join tokens, registration, heartbeats, health, enable/disable."""
