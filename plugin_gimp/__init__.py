"""The GIMP 3 plug-in (``instructir.py``); ``instructir gimp-install`` copies it into GIMP's plug-ins folder."""
