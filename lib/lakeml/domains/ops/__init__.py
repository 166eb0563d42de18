"""Operations of the lakehouse as a whole (table maintenance), run as jobs of the DAG."""
