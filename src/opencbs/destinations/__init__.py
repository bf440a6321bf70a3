"""Where a backup set's repository lives: a tiny storage protocol with local-folder and
in-memory backends (architecture.md, style.md §8)."""
