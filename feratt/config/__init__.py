"""The settings that files record: training and rendering configurations, validated on construction."""
