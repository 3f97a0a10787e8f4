//! The `OwnershipPolicy` document (hallmark.dev/v1alpha1).
