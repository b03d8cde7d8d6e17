"""Identity (Keystone's role): users, projects, roles, tokens, credentials, policy, quotas."""
