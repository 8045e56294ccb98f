"""Everything that talks to (or stands in for) a model. The only package that imports openai."""
