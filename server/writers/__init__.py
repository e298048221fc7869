"""Writers: destinations of the dispatcher's batches of changes."""
