"""Web dashboard sessions: a signed-in browser holds a random token, ftq holds its hash."""
