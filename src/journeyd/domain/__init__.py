"""Pure values and rules: no I/O lives here."""
