"""Local test doubles ("devnets") for systems whose real server cannot be installed here."""
