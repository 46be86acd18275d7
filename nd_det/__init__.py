"""nd-det."""
