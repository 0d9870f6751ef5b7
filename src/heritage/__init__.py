"""heritage: trustworthy machine learning for small cultural-heritage collections."""

__version__ = "0.1.0"
