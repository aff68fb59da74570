"""What goes on the wire: payload bodies in AutoPi's shape, and their signatures."""
