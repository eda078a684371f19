"""hoopgate's built-in protocol plugins (PostgreSQL, MySQL, SSH, HTTP)."""
