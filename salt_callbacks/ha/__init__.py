"""Several masters on one shared store: who delivers what (claims, coordinators)."""
