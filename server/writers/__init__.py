"""Writers: destinations of the dispatcher's batches of changes. Each kind is one module
(its options, builder and writer class) with a row in `kinds.KINDS`."""
