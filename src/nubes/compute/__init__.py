"""Compute: instances, flavors, keypairs, server groups and lifecycle operations."""
