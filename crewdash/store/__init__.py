"""The history database: its tables, the store of batches, owners and leases, migrations."""
