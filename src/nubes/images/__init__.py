"""Images: the registry (Glance semantics, later issue), image files, and builders."""
