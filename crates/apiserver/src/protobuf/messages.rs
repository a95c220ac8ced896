//! Field tables of the protobuf messages decoded: field number → JSON name and type, from the
//! `generated.proto` files of k8s.io/api and k8s.io/apimachinery.
//!
//! They cover the kinds client-go sends as protobuf to this server — what kubectl's imperative
//! commands create (Namespace, ServiceAccount, ConfigMap, Secret, Job, the RBAC kinds), the
//! access reviews of `kubectl auth`, and DeleteOptions — with the fields those objects carry
//! in practice. A field missing here is refused, never dropped.

/// A field's type, as far as JSON is concerned.
#[derive(Debug)]
pub(super) enum Ty {
    String,
    /// Base64 in JSON.
    Bytes,
    /// int32 or int64.
    Int,
    Bool,
    /// `meta.v1.Time`: RFC 3339 in JSON, `null` when zero.
    Time,
    /// `resource.Quantity`: a string in JSON.
    Quantity,
    /// `meta.v1.FieldsV1`: raw JSON.
    FieldsV1,
    Message(&'static Message),
    /// An embedded Go struct: its fields are the parent's fields in JSON (`json:",inline"`).
    Inline(&'static Message),
    StringMap,
    BytesMap,
    QuantityMap,
}

impl Ty {
    /// Whether values are varints (and so may come packed when repeated).
    pub fn is_varint(&self) -> bool {
        matches!(self, Ty::Int | Ty::Bool)
    }
}

/// One field of a message.
#[derive(Debug)]
pub(super) struct Field {
    pub number: u32,
    /// The JSON member name.
    pub name: &'static str,
    pub ty: Ty,
    pub repeated: bool,
    /// A Go pointer: present means set, even to zero (`automountServiceAccountToken: false`).
    /// gogo-protobuf writes every other field even when zero, which JSON omits.
    pub pointer: bool,
}

impl Field {
    pub const fn new(number: u32, name: &'static str, ty: Ty) -> Field {
        Field { number, name, ty, repeated: false, pointer: false }
    }

    const fn list(self) -> Field {
        Field { repeated: true, ..self }
    }

    const fn ptr(self) -> Field {
        Field { pointer: true, ..self }
    }
}

/// A message: its full protobuf name (for errors) and its fields.
#[derive(Debug)]
pub(super) struct Message {
    pub name: &'static str,
    pub fields: &'static [Field],
}

const fn s(number: u32, name: &'static str) -> Field {
    Field::new(number, name, Ty::String)
}
const fn int(number: u32, name: &'static str) -> Field {
    Field::new(number, name, Ty::Int)
}
const fn boolean(number: u32, name: &'static str) -> Field {
    Field::new(number, name, Ty::Bool)
}
const fn time(number: u32, name: &'static str) -> Field {
    Field::new(number, name, Ty::Time)
}
const fn msg(number: u32, name: &'static str, m: &'static Message) -> Field {
    Field::new(number, name, Ty::Message(m))
}
const fn strings(number: u32, name: &'static str) -> Field {
    s(number, name).list()
}
const fn string_map(number: u32, name: &'static str) -> Field {
    Field::new(number, name, Ty::StringMap)
}

/// The kinds decoded, by `apiVersion` (`*`: any) and `kind`.
static KINDS: &[(&str, &str, &Message)] = &[
    ("v1", "Namespace", &NAMESPACE),
    ("v1", "ServiceAccount", &SERVICE_ACCOUNT),
    ("v1", "ConfigMap", &CONFIG_MAP),
    ("v1", "Secret", &SECRET),
    ("batch/v1", "Job", &JOB),
    ("rbac.authorization.k8s.io/v1", "Role", &ROLE),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", &CLUSTER_ROLE),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", &ROLE_BINDING),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", &ROLE_BINDING),
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview", &SELF_SUBJECT_ACCESS_REVIEW),
    ("authentication.k8s.io/v1", "SelfSubjectReview", &SELF_SUBJECT_REVIEW),
    // Typed clients encode DeleteOptions in their own group's version.
    ("*", "DeleteOptions", &DELETE_OPTIONS),
];

/// The message of objects of `api_version`/`kind`, if decoded.
pub(super) fn kind(api_version: &str, kind: &str) -> Option<&'static Message> {
    KINDS
        .iter()
        .find(|(av, k, _)| (*av == api_version || *av == "*") && *k == kind)
        .map(|(_, _, m)| *m)
}

// --- k8s.io/apimachinery ---

pub(super) static TIME: Message = Message {
    name: "k8s.io.apimachinery.pkg.apis.meta.v1.Timestamp",
    fields: &[int(1, "seconds"), int(2, "nanos")],
};

pub(super) static QUANTITY: Message =
    Message { name: "k8s.io.apimachinery.pkg.api.resource.Quantity", fields: &[s(1, "string")] };

pub(super) static FIELDS_V1: Message = Message {
    name: "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1",
    fields: &[Field::new(1, "Raw", Ty::Bytes)],
};

static OBJECT_META: Message = Message {
    name: "k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta",
    fields: &[
        s(1, "name"),
        s(2, "generateName"),
        s(3, "namespace"),
        s(4, "selfLink"),
        s(5, "uid"),
        s(6, "resourceVersion"),
        int(7, "generation"),
        time(8, "creationTimestamp"),
        time(9, "deletionTimestamp").ptr(),
        int(10, "deletionGracePeriodSeconds").ptr(),
        string_map(11, "labels"),
        string_map(12, "annotations"),
        msg(13, "ownerReferences", &OWNER_REFERENCE).list(),
        strings(14, "finalizers"),
        msg(17, "managedFields", &MANAGED_FIELDS_ENTRY).list(),
    ],
};

static OWNER_REFERENCE: Message = Message {
    name: "k8s.io.apimachinery.pkg.apis.meta.v1.OwnerReference",
    fields: &[
        s(5, "apiVersion"),
        s(1, "kind"),
        s(3, "name"),
        s(4, "uid"),
        boolean(6, "controller").ptr(),
        boolean(7, "blockOwnerDeletion").ptr(),
    ],
};

static MANAGED_FIELDS_ENTRY: Message = Message {
    name: "k8s.io.apimachinery.pkg.apis.meta.v1.ManagedFieldsEntry",
    fields: &[
        s(1, "manager"),
        s(2, "operation"),
        s(3, "apiVersion"),
        time(4, "time").ptr(),
        s(6, "fieldsType"),
        Field::new(7, "fieldsV1", Ty::FieldsV1).ptr(),
        s(8, "subresource"),
    ],
};

static LABEL_SELECTOR: Message = Message {
    name: "k8s.io.apimachinery.pkg.apis.meta.v1.LabelSelector",
    fields: &[
        string_map(1, "matchLabels"),
        msg(2, "matchExpressions", &SELECTOR_REQUIREMENT).list(),
    ],
};

/// LabelSelectorRequirement and FieldSelectorRequirement have the same fields.
static SELECTOR_REQUIREMENT: Message = Message {
    name: "k8s.io.apimachinery.pkg.apis.meta.v1.LabelSelectorRequirement",
    fields: &[s(1, "key"), s(2, "operator"), strings(3, "values")],
};

static DELETE_OPTIONS: Message = Message {
    name: "k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions",
    fields: &[
        int(1, "gracePeriodSeconds").ptr(),
        msg(2, "preconditions", &PRECONDITIONS),
        boolean(3, "orphanDependents").ptr(),
        s(4, "propagationPolicy").ptr(),
        strings(5, "dryRun"),
        boolean(6, "ignoreStoreReadErrorWithClusterBreakingPotential").ptr(),
    ],
};

static PRECONDITIONS: Message = Message {
    name: "k8s.io.apimachinery.pkg.apis.meta.v1.Preconditions",
    fields: &[s(1, "uid").ptr(), s(2, "resourceVersion").ptr()],
};

// --- core/v1 ---

static NAMESPACE: Message = Message {
    name: "k8s.io.api.core.v1.Namespace",
    fields: &[
        msg(1, "metadata", &OBJECT_META),
        msg(2, "spec", &NAMESPACE_SPEC),
        msg(3, "status", &NAMESPACE_STATUS),
    ],
};

static NAMESPACE_SPEC: Message =
    Message { name: "k8s.io.api.core.v1.NamespaceSpec", fields: &[strings(1, "finalizers")] };

static NAMESPACE_STATUS: Message = Message {
    name: "k8s.io.api.core.v1.NamespaceStatus",
    fields: &[s(1, "phase"), msg(2, "conditions", &CONDITION).list()],
};

/// NamespaceCondition and JobCondition: the same fields under the same numbers.
static CONDITION: Message = Message {
    name: "k8s.io.api.core.v1.NamespaceCondition",
    fields: &[
        s(1, "type"),
        s(2, "status"),
        time(3, "lastProbeTime"),
        time(4, "lastTransitionTime"),
        s(5, "reason"),
        s(6, "message"),
    ],
};

static SERVICE_ACCOUNT: Message = Message {
    name: "k8s.io.api.core.v1.ServiceAccount",
    fields: &[
        msg(1, "metadata", &OBJECT_META),
        msg(2, "secrets", &OBJECT_REFERENCE).list(),
        msg(3, "imagePullSecrets", &LOCAL_OBJECT_REFERENCE).list(),
        boolean(4, "automountServiceAccountToken").ptr(),
    ],
};

static OBJECT_REFERENCE: Message = Message {
    name: "k8s.io.api.core.v1.ObjectReference",
    fields: &[
        s(1, "kind"),
        s(2, "namespace"),
        s(3, "name"),
        s(4, "uid"),
        s(5, "apiVersion"),
        s(6, "resourceVersion"),
        s(7, "fieldPath"),
    ],
};

static LOCAL_OBJECT_REFERENCE: Message =
    Message { name: "k8s.io.api.core.v1.LocalObjectReference", fields: &[s(1, "name")] };

static CONFIG_MAP: Message = Message {
    name: "k8s.io.api.core.v1.ConfigMap",
    fields: &[
        msg(1, "metadata", &OBJECT_META),
        boolean(4, "immutable").ptr(),
        string_map(2, "data"),
        Field::new(3, "binaryData", Ty::BytesMap),
    ],
};

static SECRET: Message = Message {
    name: "k8s.io.api.core.v1.Secret",
    fields: &[
        msg(1, "metadata", &OBJECT_META),
        boolean(5, "immutable").ptr(),
        Field::new(2, "data", Ty::BytesMap),
        string_map(4, "stringData"),
        s(3, "type"),
    ],
};

static POD_TEMPLATE_SPEC: Message = Message {
    name: "k8s.io.api.core.v1.PodTemplateSpec",
    fields: &[msg(1, "metadata", &OBJECT_META), msg(2, "spec", &POD_SPEC)],
};

static POD_SPEC: Message = Message {
    name: "k8s.io.api.core.v1.PodSpec",
    fields: &[
        msg(1, "volumes", &VOLUME).list(),
        msg(20, "initContainers", &CONTAINER).list(),
        msg(2, "containers", &CONTAINER).list(),
        s(3, "restartPolicy"),
        int(4, "terminationGracePeriodSeconds").ptr(),
        int(5, "activeDeadlineSeconds").ptr(),
        s(6, "dnsPolicy"),
        string_map(7, "nodeSelector"),
        s(8, "serviceAccountName"),
        s(9, "serviceAccount"),
        boolean(21, "automountServiceAccountToken").ptr(),
        s(10, "nodeName"),
        boolean(11, "hostNetwork"),
        boolean(12, "hostPID"),
        boolean(13, "hostIPC"),
        boolean(27, "shareProcessNamespace").ptr(),
        msg(14, "securityContext", &POD_SECURITY_CONTEXT),
        msg(15, "imagePullSecrets", &LOCAL_OBJECT_REFERENCE).list(),
        s(16, "hostname"),
        s(17, "subdomain"),
        s(19, "schedulerName"),
        msg(22, "tolerations", &TOLERATION).list(),
        s(24, "priorityClassName"),
        int(25, "priority").ptr(),
        s(29, "runtimeClassName").ptr(),
        boolean(30, "enableServiceLinks").ptr(),
        s(31, "preemptionPolicy").ptr(),
        boolean(35, "setHostnameAsFQDN").ptr(),
        boolean(37, "hostUsers").ptr(),
    ],
};

static CONTAINER: Message = Message {
    name: "k8s.io.api.core.v1.Container",
    fields: &[
        s(1, "name"),
        s(2, "image"),
        strings(3, "command"),
        strings(4, "args"),
        s(5, "workingDir"),
        msg(6, "ports", &CONTAINER_PORT).list(),
        msg(19, "envFrom", &ENV_FROM_SOURCE).list(),
        msg(7, "env", &ENV_VAR).list(),
        msg(8, "resources", &RESOURCE_REQUIREMENTS),
        s(24, "restartPolicy").ptr(),
        msg(9, "volumeMounts", &VOLUME_MOUNT).list(),
        s(13, "terminationMessagePath"),
        s(20, "terminationMessagePolicy"),
        s(14, "imagePullPolicy"),
        msg(15, "securityContext", &SECURITY_CONTEXT),
        boolean(16, "stdin"),
        boolean(17, "stdinOnce"),
        boolean(18, "tty"),
    ],
};

static CONTAINER_PORT: Message = Message {
    name: "k8s.io.api.core.v1.ContainerPort",
    fields: &[
        s(1, "name"),
        int(2, "hostPort"),
        int(3, "containerPort"),
        s(4, "protocol"),
        s(5, "hostIP"),
    ],
};

static ENV_VAR: Message = Message {
    name: "k8s.io.api.core.v1.EnvVar",
    fields: &[s(1, "name"), s(2, "value"), msg(3, "valueFrom", &ENV_VAR_SOURCE)],
};

static ENV_VAR_SOURCE: Message = Message {
    name: "k8s.io.api.core.v1.EnvVarSource",
    fields: &[
        msg(1, "fieldRef", &OBJECT_FIELD_SELECTOR),
        msg(2, "resourceFieldRef", &RESOURCE_FIELD_SELECTOR),
        msg(3, "configMapKeyRef", &KEY_SELECTOR),
        msg(4, "secretKeyRef", &KEY_SELECTOR),
    ],
};

/// ConfigMapKeySelector and SecretKeySelector.
static KEY_SELECTOR: Message = Message {
    name: "k8s.io.api.core.v1.SecretKeySelector",
    fields: &[
        Field::new(1, "localObjectReference", Ty::Inline(&LOCAL_OBJECT_REFERENCE)),
        s(2, "key"),
        boolean(3, "optional").ptr(),
    ],
};

static OBJECT_FIELD_SELECTOR: Message = Message {
    name: "k8s.io.api.core.v1.ObjectFieldSelector",
    fields: &[s(1, "apiVersion"), s(2, "fieldPath")],
};

static RESOURCE_FIELD_SELECTOR: Message = Message {
    name: "k8s.io.api.core.v1.ResourceFieldSelector",
    fields: &[s(1, "containerName"), s(2, "resource"), Field::new(3, "divisor", Ty::Quantity)],
};

static ENV_FROM_SOURCE: Message = Message {
    name: "k8s.io.api.core.v1.EnvFromSource",
    fields: &[
        s(1, "prefix"),
        msg(2, "configMapRef", &ENV_SOURCE),
        msg(3, "secretRef", &ENV_SOURCE),
    ],
};

/// ConfigMapEnvSource and SecretEnvSource.
static ENV_SOURCE: Message = Message {
    name: "k8s.io.api.core.v1.SecretEnvSource",
    fields: &[
        Field::new(1, "localObjectReference", Ty::Inline(&LOCAL_OBJECT_REFERENCE)),
        boolean(2, "optional").ptr(),
    ],
};

static RESOURCE_REQUIREMENTS: Message = Message {
    name: "k8s.io.api.core.v1.ResourceRequirements",
    fields: &[
        Field::new(1, "limits", Ty::QuantityMap),
        Field::new(2, "requests", Ty::QuantityMap),
        msg(3, "claims", &RESOURCE_CLAIM).list(),
    ],
};

static RESOURCE_CLAIM: Message =
    Message { name: "k8s.io.api.core.v1.ResourceClaim", fields: &[s(1, "name"), s(2, "request")] };

static VOLUME_MOUNT: Message = Message {
    name: "k8s.io.api.core.v1.VolumeMount",
    fields: &[
        s(1, "name"),
        boolean(2, "readOnly"),
        s(7, "recursiveReadOnly").ptr(),
        s(3, "mountPath"),
        s(4, "subPath"),
        s(5, "mountPropagation").ptr(),
        s(6, "subPathExpr"),
    ],
};

static SECURITY_CONTEXT: Message = Message {
    name: "k8s.io.api.core.v1.SecurityContext",
    fields: &[
        msg(1, "capabilities", &CAPABILITIES),
        boolean(2, "privileged").ptr(),
        msg(3, "seLinuxOptions", &SE_LINUX_OPTIONS),
        int(4, "runAsUser").ptr(),
        int(8, "runAsGroup").ptr(),
        boolean(5, "runAsNonRoot").ptr(),
        boolean(6, "readOnlyRootFilesystem").ptr(),
        boolean(7, "allowPrivilegeEscalation").ptr(),
        s(9, "procMount").ptr(),
        msg(11, "seccompProfile", &SECCOMP_PROFILE),
    ],
};

static CAPABILITIES: Message = Message {
    name: "k8s.io.api.core.v1.Capabilities",
    fields: &[strings(1, "add"), strings(2, "drop")],
};

static POD_SECURITY_CONTEXT: Message = Message {
    name: "k8s.io.api.core.v1.PodSecurityContext",
    fields: &[
        msg(1, "seLinuxOptions", &SE_LINUX_OPTIONS),
        int(2, "runAsUser").ptr(),
        int(6, "runAsGroup").ptr(),
        boolean(3, "runAsNonRoot").ptr(),
        int(4, "supplementalGroups").list(),
        s(12, "supplementalGroupsPolicy").ptr(),
        int(5, "fsGroup").ptr(),
        msg(7, "sysctls", &SYSCTL).list(),
        s(9, "fsGroupChangePolicy").ptr(),
        msg(10, "seccompProfile", &SECCOMP_PROFILE),
    ],
};

static SE_LINUX_OPTIONS: Message = Message {
    name: "k8s.io.api.core.v1.SELinuxOptions",
    fields: &[s(1, "user"), s(2, "role"), s(3, "type"), s(4, "level")],
};

static SECCOMP_PROFILE: Message = Message {
    name: "k8s.io.api.core.v1.SeccompProfile",
    fields: &[s(1, "type"), s(2, "localhostProfile").ptr()],
};

static SYSCTL: Message =
    Message { name: "k8s.io.api.core.v1.Sysctl", fields: &[s(1, "name"), s(2, "value")] };

static TOLERATION: Message = Message {
    name: "k8s.io.api.core.v1.Toleration",
    fields: &[
        s(1, "key"),
        s(2, "operator"),
        s(3, "value"),
        s(4, "effect"),
        int(5, "tolerationSeconds").ptr(),
    ],
};

static VOLUME: Message = Message {
    name: "k8s.io.api.core.v1.Volume",
    fields: &[s(1, "name"), Field::new(2, "volumeSource", Ty::Inline(&VOLUME_SOURCE))],
};

/// The volume sources a host-process runner can serve, and the common in-cluster ones.
static VOLUME_SOURCE: Message = Message {
    name: "k8s.io.api.core.v1.VolumeSource",
    fields: &[
        msg(1, "hostPath", &HOST_PATH),
        msg(2, "emptyDir", &EMPTY_DIR),
        msg(6, "secret", &SECRET_VOLUME),
        msg(10, "persistentVolumeClaim", &PVC_VOLUME),
        msg(19, "configMap", &CONFIG_MAP_VOLUME),
    ],
};

static HOST_PATH: Message = Message {
    name: "k8s.io.api.core.v1.HostPathVolumeSource",
    fields: &[s(1, "path"), s(2, "type").ptr()],
};

static EMPTY_DIR: Message = Message {
    name: "k8s.io.api.core.v1.EmptyDirVolumeSource",
    fields: &[s(1, "medium"), Field::new(2, "sizeLimit", Ty::Quantity).ptr()],
};

static SECRET_VOLUME: Message = Message {
    name: "k8s.io.api.core.v1.SecretVolumeSource",
    fields: &[
        s(1, "secretName"),
        msg(2, "items", &KEY_TO_PATH).list(),
        int(3, "defaultMode").ptr(),
        boolean(4, "optional").ptr(),
    ],
};

static CONFIG_MAP_VOLUME: Message = Message {
    name: "k8s.io.api.core.v1.ConfigMapVolumeSource",
    fields: &[
        Field::new(1, "localObjectReference", Ty::Inline(&LOCAL_OBJECT_REFERENCE)),
        msg(2, "items", &KEY_TO_PATH).list(),
        int(3, "defaultMode").ptr(),
        boolean(4, "optional").ptr(),
    ],
};

static KEY_TO_PATH: Message = Message {
    name: "k8s.io.api.core.v1.KeyToPath",
    fields: &[s(1, "key"), s(2, "path"), int(3, "mode").ptr()],
};

static PVC_VOLUME: Message = Message {
    name: "k8s.io.api.core.v1.PersistentVolumeClaimVolumeSource",
    fields: &[s(1, "claimName"), boolean(2, "readOnly")],
};

// --- batch/v1 ---

static JOB: Message = Message {
    name: "k8s.io.api.batch.v1.Job",
    fields: &[
        msg(1, "metadata", &OBJECT_META),
        msg(2, "spec", &JOB_SPEC),
        msg(3, "status", &JOB_STATUS),
    ],
};

static JOB_SPEC: Message = Message {
    name: "k8s.io.api.batch.v1.JobSpec",
    fields: &[
        int(1, "parallelism").ptr(),
        int(2, "completions").ptr(),
        int(3, "activeDeadlineSeconds").ptr(),
        int(7, "backoffLimit").ptr(),
        int(12, "backoffLimitPerIndex").ptr(),
        int(13, "maxFailedIndexes").ptr(),
        msg(4, "selector", &LABEL_SELECTOR),
        boolean(5, "manualSelector").ptr(),
        msg(6, "template", &POD_TEMPLATE_SPEC),
        int(8, "ttlSecondsAfterFinished").ptr(),
        s(9, "completionMode").ptr(),
        boolean(10, "suspend").ptr(),
        s(14, "podReplacementPolicy").ptr(),
        s(15, "managedBy").ptr(),
    ],
};

static JOB_STATUS: Message = Message {
    name: "k8s.io.api.batch.v1.JobStatus",
    fields: &[
        msg(1, "conditions", &CONDITION).list(),
        time(2, "startTime").ptr(),
        time(3, "completionTime").ptr(),
        int(4, "active"),
        int(5, "succeeded"),
        int(6, "failed"),
        int(11, "terminating").ptr(),
        s(7, "completedIndexes"),
        s(10, "failedIndexes").ptr(),
        msg(8, "uncountedTerminatedPods", &UNCOUNTED_TERMINATED_PODS),
        int(9, "ready").ptr(),
    ],
};

static UNCOUNTED_TERMINATED_PODS: Message = Message {
    name: "k8s.io.api.batch.v1.UncountedTerminatedPods",
    fields: &[strings(1, "succeeded"), strings(2, "failed")],
};

// --- rbac.authorization.k8s.io/v1 ---

static ROLE: Message = Message {
    name: "k8s.io.api.rbac.v1.Role",
    fields: &[msg(1, "metadata", &OBJECT_META), msg(2, "rules", &POLICY_RULE).list()],
};

static CLUSTER_ROLE: Message = Message {
    name: "k8s.io.api.rbac.v1.ClusterRole",
    fields: &[
        msg(1, "metadata", &OBJECT_META),
        msg(2, "rules", &POLICY_RULE).list(),
        msg(3, "aggregationRule", &AGGREGATION_RULE),
    ],
};

static POLICY_RULE: Message = Message {
    name: "k8s.io.api.rbac.v1.PolicyRule",
    fields: &[
        strings(1, "verbs"),
        strings(2, "apiGroups"),
        strings(3, "resources"),
        strings(4, "resourceNames"),
        strings(5, "nonResourceURLs"),
    ],
};

static AGGREGATION_RULE: Message = Message {
    name: "k8s.io.api.rbac.v1.AggregationRule",
    fields: &[msg(1, "clusterRoleSelectors", &LABEL_SELECTOR).list()],
};

/// RoleBinding and ClusterRoleBinding.
static ROLE_BINDING: Message = Message {
    name: "k8s.io.api.rbac.v1.RoleBinding",
    fields: &[
        msg(1, "metadata", &OBJECT_META),
        msg(2, "subjects", &SUBJECT).list(),
        msg(3, "roleRef", &ROLE_REF),
    ],
};

static SUBJECT: Message = Message {
    name: "k8s.io.api.rbac.v1.Subject",
    fields: &[s(1, "kind"), s(2, "apiGroup"), s(3, "name"), s(4, "namespace")],
};

static ROLE_REF: Message = Message {
    name: "k8s.io.api.rbac.v1.RoleRef",
    fields: &[s(1, "apiGroup"), s(2, "kind"), s(3, "name")],
};

// --- authorization.k8s.io/v1, authentication.k8s.io/v1 ---

static SELF_SUBJECT_ACCESS_REVIEW: Message = Message {
    name: "k8s.io.api.authorization.v1.SelfSubjectAccessReview",
    fields: &[
        msg(1, "metadata", &OBJECT_META),
        msg(2, "spec", &SELF_SUBJECT_ACCESS_REVIEW_SPEC),
        msg(3, "status", &SUBJECT_ACCESS_REVIEW_STATUS),
    ],
};

static SELF_SUBJECT_ACCESS_REVIEW_SPEC: Message = Message {
    name: "k8s.io.api.authorization.v1.SelfSubjectAccessReviewSpec",
    fields: &[
        msg(1, "resourceAttributes", &RESOURCE_ATTRIBUTES),
        msg(2, "nonResourceAttributes", &NON_RESOURCE_ATTRIBUTES),
    ],
};

static RESOURCE_ATTRIBUTES: Message = Message {
    name: "k8s.io.api.authorization.v1.ResourceAttributes",
    fields: &[
        s(1, "namespace"),
        s(2, "verb"),
        s(3, "group"),
        s(4, "version"),
        s(5, "resource"),
        s(6, "subresource"),
        s(7, "name"),
        msg(8, "fieldSelector", &SELECTOR_ATTRIBUTES),
        msg(9, "labelSelector", &SELECTOR_ATTRIBUTES),
    ],
};

/// FieldSelectorAttributes and LabelSelectorAttributes.
static SELECTOR_ATTRIBUTES: Message = Message {
    name: "k8s.io.api.authorization.v1.LabelSelectorAttributes",
    fields: &[s(1, "rawSelector"), msg(2, "requirements", &SELECTOR_REQUIREMENT).list()],
};

static NON_RESOURCE_ATTRIBUTES: Message = Message {
    name: "k8s.io.api.authorization.v1.NonResourceAttributes",
    fields: &[s(1, "path"), s(2, "verb")],
};

static SUBJECT_ACCESS_REVIEW_STATUS: Message = Message {
    name: "k8s.io.api.authorization.v1.SubjectAccessReviewStatus",
    fields: &[boolean(1, "allowed"), boolean(4, "denied"), s(2, "reason"), s(3, "evaluationError")],
};

static SELF_SUBJECT_REVIEW: Message = Message {
    name: "k8s.io.api.authentication.v1.SelfSubjectReview",
    fields: &[msg(1, "metadata", &OBJECT_META), msg(2, "status", &SELF_SUBJECT_REVIEW_STATUS)],
};

static SELF_SUBJECT_REVIEW_STATUS: Message = Message {
    name: "k8s.io.api.authentication.v1.SelfSubjectReviewStatus",
    fields: &[msg(1, "userInfo", &USER_INFO)],
};

static USER_INFO: Message = Message {
    name: "k8s.io.api.authentication.v1.UserInfo",
    fields: &[s(1, "username"), s(2, "uid"), strings(3, "groups")],
};

#[cfg(test)]
mod tests {
    use super::*;

    fn check(m: &Message, seen: &mut Vec<&'static str>) {
        if seen.contains(&m.name) {
            return;
        }
        seen.push(m.name);
        let mut numbers: Vec<u32> = m.fields.iter().map(|f| f.number).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), m.fields.len(), "{} repeats a field number", m.name);
        for f in m.fields {
            if let Ty::Message(inner) | Ty::Inline(inner) = f.ty {
                check(inner, seen);
            }
        }
    }

    #[test]
    fn every_table_has_distinct_field_numbers() {
        let mut seen = Vec::new();
        for (_, _, m) in KINDS {
            check(m, &mut seen);
        }
        assert!(seen.len() > 40, "{}", seen.len());
    }

    #[test]
    fn kinds_are_found_by_api_version_and_kind() {
        assert!(kind("v1", "Secret").is_some());
        assert!(kind("batch/v1", "Secret").is_none());
        assert!(kind("velero.io/v1", "Backup").is_none());
        assert!(kind("policy/v1", "DeleteOptions").is_some());
    }
}
