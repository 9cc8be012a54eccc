"""Raw datasets: reading, checking, example tasks, instance maps, prediction files."""
