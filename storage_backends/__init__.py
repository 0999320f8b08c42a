"""Storage backends (namespace ``compute_driver.storage``): one module per backend."""
