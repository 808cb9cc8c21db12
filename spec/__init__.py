"""Claims registry, symbolic derivations and the ledger tooling of the executable specification."""
