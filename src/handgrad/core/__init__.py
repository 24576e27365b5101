"""The bottom layer: array namespaces, argument checks, errors, atomic files, archives,
random generators and text tables. It imports nothing else from handgrad."""
