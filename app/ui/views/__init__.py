"""One module per page; each exposes `render()` (and helpers) so tests can run it alone."""
