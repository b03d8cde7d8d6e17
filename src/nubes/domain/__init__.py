"""Pure types, enums, state tables and error codes: no I/O, no imports from the rest of nubes."""
