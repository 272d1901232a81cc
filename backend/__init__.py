"""DocTune's library: one module per pipeline stage, plus the store and configs. Imports nothing from actors/ or dashboard/."""
