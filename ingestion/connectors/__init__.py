"""Sources that sync themselves: one module per kind of source (folder, imap, web), each a `Connector`
(ingestion/connectors/base.py) registered by kind in ingestion/connectors/registry.py."""
