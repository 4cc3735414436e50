"""edgekit backend: hybrid BIOS/UEFI installer ISOs and site ISOs (pycdlib and xorriso)."""
