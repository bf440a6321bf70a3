"""CBS calls about backup jobs and sets (cbs-api.md §7): ListBackupJobs, ListBackupJobStatus,
ListBackupJobMode, GetBackupJobProgress, ListBackupSets, GetBackupSet."""
