"""Tiny Core formats and its repository: the mirror client, .tcz, cpio initrds, isolinux, ISO images."""
