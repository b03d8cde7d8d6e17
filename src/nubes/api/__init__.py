"""HTTP faces. Thin adapters: parse, authorise, call a service, render. No business logic."""
