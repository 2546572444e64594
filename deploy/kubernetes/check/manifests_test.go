package check

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/wsgate/wsgate/config"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// manifestDir is deploy/kubernetes, seen from this package's directory
// (where go test runs it).
const manifestDir = ".."

// configKey is the ConfigMap key that holds wsgate.yaml, and configDir
// where the Deployment mounts the ConfigMap.
const (
	configKey = "wsgate.yaml"
	configDir = "/etc/wsgate"
)

// kustomization is the part of kustomize's Kustomization these manifests
// use. kustomize's own types are a large module; this struct is decoded
// strictly too, so a key it does not list fails the test rather than
// being ignored.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
}

// manifests is every file of deploy/kubernetes, decoded.
type manifests struct {
	configMap  corev1.ConfigMap
	deployment appsv1.Deployment
	service    corev1.Service
	backend    corev1.Service
	pdb        policyv1.PodDisruptionBudget
	kust       kustomization
	// cfg is the ConfigMap's wsgate.yaml as wsgate's loader returns it.
	cfg *config.Config
}

// load decodes every manifest strictly and the ConfigMap's wsgate.yaml
// with wsgate's loader, failing the test on any problem.
func load(t *testing.T) *manifests {
	t.Helper()
	m := &manifests{}
	decodeFile(t, "configmap.yaml", &m.configMap, "v1", "ConfigMap")
	decodeFile(t, "deployment.yaml", &m.deployment, "apps/v1", "Deployment")
	decodeFile(t, "service.yaml", &m.service, "v1", "Service")
	decodeFile(t, "backend-headless-service.yaml", &m.backend, "v1", "Service")
	decodeFile(t, "poddisruptionbudget.yaml", &m.pdb, "policy/v1", "PodDisruptionBudget")

	data := readOneDocument(t, "kustomization.yaml")
	if err := yaml.UnmarshalStrict(data, &m.kust); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if m.kust.APIVersion != "kustomize.config.k8s.io/v1beta1" || m.kust.Kind != "Kustomization" {
		t.Fatalf("kustomization.yaml is %s %s; want kustomize.config.k8s.io/v1beta1 Kustomization",
			m.kust.APIVersion, m.kust.Kind)
	}

	text, ok := m.configMap.Data[configKey]
	if !ok {
		t.Fatalf("configmap.yaml has no data key %q", configKey)
	}
	cfg, err := config.Parse("configmap.yaml data."+configKey, []byte(text))
	if err != nil {
		t.Fatalf("the ConfigMap's %s does not pass wsgate's config loader:\n%v", configKey, err)
	}
	for _, w := range cfg.Warnings {
		t.Errorf("the ConfigMap's %s has a warning: %v", configKey, w)
	}
	m.cfg = cfg
	return m
}

// readOneDocument reads a manifest file and fails unless it holds exactly
// one YAML document: the decoders below would read only the first.
func readOneDocument(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(manifestDir, name))
	if err != nil {
		t.Fatal(err)
	}
	docs := 0
	for _, doc := range bytes.Split(data, []byte("\n---")) {
		if hasContent(doc) {
			docs++
		}
	}
	if docs != 1 {
		t.Fatalf("%s holds %d YAML documents; want one per file", name, docs)
	}
	return data
}

// hasContent reports whether a YAML document has anything beyond blank
// lines and comments.
func hasContent(doc []byte) bool {
	for line := range strings.Lines(string(doc)) {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			return true
		}
	}
	return false
}

// decodeFile decodes the one document of a manifest into obj, the API type
// of its kind, rejecting unknown and duplicate fields, and checks that the
// document says it is that apiVersion and kind.
func decodeFile(t *testing.T, name string, obj runtime.Object, apiVersion, kind string) {
	t.Helper()
	if err := decodeStrict(readOneDocument(t, name), obj); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	gvk := obj.GetObjectKind().GroupVersionKind()
	if got, _ := gvk.ToAPIVersionAndKind(); got != apiVersion || gvk.Kind != kind {
		t.Fatalf("%s is %s %s; want %s %s", name, got, gvk.Kind, apiVersion, kind)
	}
}

// decodeStrict is sigs.k8s.io/yaml's strict decoding, the YAML-to-JSON
// path kubectl takes, with unknown and duplicate fields as errors.
func decodeStrict(data []byte, obj any) error {
	return yaml.UnmarshalStrict(data, obj, func(d *json.Decoder) *json.Decoder {
		d.DisallowUnknownFields()
		return d
	})
}

// The decoder must reject what kubectl's strict field validation rejects,
// or every check below could pass on a misspelt manifest.
func TestDecoderIsStrict(t *testing.T) {
	for _, doc := range []string{
		"apiVersion: apps/v1\nkind: Deployment\nspec:\n  replica: 2\n",
		"apiVersion: apps/v1\nkind: Deployment\nspec:\n  replicas: 2\n  replicas: 3\n",
		"apiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n        - name: a\n          readinesProbe: {}\n",
	} {
		var d appsv1.Deployment
		if err := decodeStrict([]byte(doc), &d); err == nil {
			t.Errorf("decoded without error:\n%s", doc)
		}
	}
}

// kubectl apply -k applies what kustomization.yaml lists: every other
// manifest here, each once.
func TestKustomizationListsEveryManifest(t *testing.T) {
	m := load(t)
	files, err := filepath.Glob(filepath.Join(manifestDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" {
			want = append(want, base)
		}
	}
	got := slices.Sorted(slices.Values(m.kust.Resources))
	if !slices.Equal(got, want) {
		t.Errorf("kustomization.yaml resources %v; want the manifests %v", got, want)
	}
}

// port returns the port of a host:port address from the config.
func port(t *testing.T, key, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s %q: %v", key, addr, err)
	}
	n, err := strconv.ParseInt(p, 10, 32)
	if err != nil {
		t.Fatalf("%s %q: port: %v", key, addr, err)
	}
	return int32(n)
}

// wsgateContainer is the Deployment's one container.
func wsgateContainer(t *testing.T, m *manifests) *corev1.Container {
	t.Helper()
	cs := m.deployment.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("deployment has %d containers; want 1", len(cs))
	}
	return &cs[0]
}

// containerPort resolves a probe's or Service's port (a number or the name
// of a container port) to the container port's number, 0 when it names
// none.
func containerPort(c *corev1.Container, p intstr.IntOrString) int32 {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort
		}
	}
	return 0
}

// The pod serves exactly the ports the config binds, and the probes ask
// the admin listener for its health endpoints.
func TestDeploymentMatchesConfig(t *testing.T) {
	m := load(t)
	c := wsgateContainer(t, m)
	if m.cfg.Admin.Address == "" {
		t.Fatal("the ConfigMap's config sets no admin.address: the probes have nothing to ask")
	}
	admin := port(t, "admin.address", m.cfg.Admin.Address)

	want := []int32{admin}
	for i, l := range m.cfg.Listeners {
		host, _, _ := net.SplitHostPort(l.Address)
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
			t.Errorf("listeners[%d] %s is a loopback address: nothing outside the pod reaches it", i, l.Address)
		}
		want = append(want, port(t, "listener", l.Address))
	}
	var got []int32
	for _, cp := range c.Ports {
		if cp.Protocol != "" && cp.Protocol != corev1.ProtocolTCP {
			t.Errorf("container port %s is %s; wsgate speaks TCP", cp.Name, cp.Protocol)
		}
		got = append(got, cp.ContainerPort)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("container ports %v; want the config's listener and admin ports %v", got, want)
	}
	if host, _, _ := net.SplitHostPort(m.cfg.Admin.Address); host != "0.0.0.0" && host != "" && host != "::" {
		t.Errorf("admin.address %s: the kubelet probes the pod's IP, so the admin listener must bind every interface", m.cfg.Admin.Address)
	}

	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"readinessProbe", c.ReadinessProbe, "/readyz"},
		{"livenessProbe", c.LivenessProbe, "/healthz"},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s is not an httpGet probe", p.name)
			continue
		}
		if p.probe.HTTPGet.Path != p.path {
			t.Errorf("%s path %q; want %q", p.name, p.probe.HTTPGet.Path, p.path)
		}
		if got := containerPort(c, p.probe.HTTPGet.Port); got != admin {
			t.Errorf("%s port %s is container port %d; want the admin port %d", p.name, p.probe.HTTPGet.Port.String(), got, admin)
		}
	}

	// The config reaches wsgate: -config names the file the ConfigMap's
	// key becomes in the mounted directory.
	if !slices.Equal(c.Args[:min(2, len(c.Args))], []string{"-config", configDir + "/" + configKey}) {
		t.Errorf("args %v; want them to start with -config %s/%s", c.Args, configDir, configKey)
	}
	// A ConfigMap update reaches the pod as a new file content: -watch
	// reloads it in place.
	if !slices.Contains(c.Args, "-watch") {
		t.Errorf("args %v; want -watch, so a ConfigMap change is reloaded", c.Args)
	}
	var volume string
	for _, vm := range c.VolumeMounts {
		if vm.MountPath == configDir {
			volume = vm.Name
			if vm.SubPath != "" {
				t.Errorf("config is mounted with subPath %q: a subPath mount never sees ConfigMap updates", vm.SubPath)
			}
		}
	}
	found := false
	for _, v := range m.deployment.Spec.Template.Spec.Volumes {
		if v.Name == volume && v.ConfigMap != nil && v.ConfigMap.Name == m.configMap.Name {
			found = true
		}
	}
	if volume == "" || !found {
		t.Errorf("no volume of ConfigMap %s is mounted at %s", m.configMap.Name, configDir)
	}
}

// On SIGTERM wsgate drains for up to timeouts.drain; the kubelet's
// SIGKILL comes terminationGracePeriodSeconds after termination began,
// which includes the preStop pause. The grace period must cover both.
func TestGracePeriodCoversDrain(t *testing.T) {
	m := load(t)
	spec := m.deployment.Spec.Template.Spec
	if spec.TerminationGracePeriodSeconds == nil {
		t.Fatal("terminationGracePeriodSeconds is not set (the default 30s equals the default drain)")
	}
	grace := *spec.TerminationGracePeriodSeconds
	var preStop int64
	if ls := wsgateContainer(t, m).Lifecycle; ls != nil && ls.PreStop != nil {
		if ls.PreStop.Sleep == nil {
			t.Fatal("preStop is not a sleep: the image has no shell or binaries to exec")
		}
		preStop = ls.PreStop.Sleep.Seconds
	}
	drain := m.cfg.Timeouts.Drain.Std().Seconds()
	if float64(grace) <= float64(preStop)+drain {
		t.Errorf("terminationGracePeriodSeconds %d; want more than preStop %ds + timeouts.drain %gs", grace, preStop, drain)
	}
}

// The pod and its container run as non-root, on a read-only root file
// system, without privilege escalation or capabilities, with resources
// requested and limited.
func TestDeploymentSecurity(t *testing.T) {
	m := load(t)
	pod := m.deployment.Spec.Template.Spec.SecurityContext
	if pod == nil || pod.RunAsNonRoot == nil || !*pod.RunAsNonRoot {
		t.Error("pod securityContext.runAsNonRoot is not true")
	}
	if pod != nil && pod.RunAsUser != nil && *pod.RunAsUser == 0 {
		t.Error("pod securityContext.runAsUser is 0")
	}
	c := wsgateContainer(t, m)
	sc := c.SecurityContext
	if sc == nil {
		t.Fatal("the container has no securityContext")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem is not true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot {
		t.Error("the container overrides runAsNonRoot with false")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("the container is privileged")
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
		t.Errorf("capabilities %+v; want drop [ALL] and nothing added", sc.Capabilities)
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, lim := c.Resources.Requests[r], c.Resources.Limits[r]
		if req.IsZero() || lim.IsZero() {
			t.Errorf("%s: request %s, limit %s; want both set", r, req.String(), lim.String())
		} else if req.Cmp(lim) > 0 {
			t.Errorf("%s: request %s is above the limit %s", r, req.String(), lim.String())
		}
	}
}

// selects reports whether a label selector selects the given labels.
func selects(t *testing.T, sel *metav1.LabelSelector, set map[string]string) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatal(err)
	}
	return !s.Empty() && s.Matches(labels.Set(set))
}

// The Deployment's, the Service's and the PodDisruptionBudget's selectors
// all pick the Deployment's pods.
func TestSelectorsMatchPods(t *testing.T) {
	m := load(t)
	pod := m.deployment.Spec.Template.Labels
	if !selects(t, m.deployment.Spec.Selector, pod) {
		t.Errorf("deployment selector %v does not select its pod labels %v", m.deployment.Spec.Selector, pod)
	}
	if !selects(t, m.pdb.Spec.Selector, pod) {
		t.Errorf("PodDisruptionBudget selector %v does not select the pod labels %v", m.pdb.Spec.Selector, pod)
	}
	if len(m.service.Spec.Selector) == 0 || !labels.SelectorFromSet(m.service.Spec.Selector).Matches(labels.Set(pod)) {
		t.Errorf("service selector %v does not select the pod labels %v", m.service.Spec.Selector, pod)
	}
	if m.pdb.Spec.MinAvailable == nil && m.pdb.Spec.MaxUnavailable == nil {
		t.Error("PodDisruptionBudget sets neither minAvailable nor maxUnavailable")
	}
}

// The Service sends clients to the listener ports and never to the admin
// port.
func TestServiceTargetsListeners(t *testing.T) {
	m := load(t)
	c := wsgateContainer(t, m)
	admin := port(t, "admin.address", m.cfg.Admin.Address)
	var listeners []int32
	for _, l := range m.cfg.Listeners {
		listeners = append(listeners, port(t, "listener", l.Address))
	}
	if len(m.service.Spec.Ports) == 0 {
		t.Fatal("service has no ports")
	}
	for _, sp := range m.service.Spec.Ports {
		target := sp.TargetPort
		if target.Type == intstr.Int && target.IntVal == 0 {
			target = intstr.FromInt32(sp.Port) // targetPort defaults to port
		}
		got := containerPort(c, target)
		switch {
		case got == 0:
			t.Errorf("service port %d targets %s, which is no container port", sp.Port, target.String())
		case got == admin:
			t.Errorf("service port %d exposes the admin port %d", sp.Port, admin)
		case !slices.Contains(listeners, got):
			t.Errorf("service port %d targets container port %d, which no listener binds (listeners %v)", sp.Port, got, listeners)
		}
	}
}

// The ConfigMap's upstream finds the backend's pods through the headless
// Service's DNS name, on the pods' port.
func TestBackendServiceIsDiscovered(t *testing.T) {
	m := load(t)
	if m.backend.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("backend Service clusterIP %q; want None: a ClusterIP name resolves to one virtual IP, so wsgate would see one server", m.backend.Spec.ClusterIP)
	}
	if len(m.backend.Spec.Selector) == 0 {
		t.Error("backend Service has no selector: its name would resolve to no pod")
	}
	ns := m.kust.Namespace
	if m.backend.Namespace != "" {
		ns = m.backend.Namespace
	}
	if ns == "" {
		ns = "default"
	}
	host := m.backend.Name + "." + ns + ".svc.cluster.local"
	var podPorts []int32
	for _, sp := range m.backend.Spec.Ports {
		switch sp.TargetPort.Type {
		case intstr.String:
			t.Errorf("backend port %s has a named targetPort: wsgate's address needs the number", sp.Name)
		default:
			p := sp.TargetPort.IntVal
			if p == 0 {
				p = sp.Port
			}
			podPorts = append(podPorts, p)
		}
	}

	found := false
	for name, u := range m.cfg.Upstreams {
		for i, s := range u.Servers {
			h, _, err := net.SplitHostPort(s.Address)
			if err != nil || h != host {
				continue
			}
			found = true
			if p := port(t, "server", s.Address); !slices.Contains(podPorts, p) {
				t.Errorf("upstreams.%s.servers[%d] %s: port %d is not the backend pods' port %v", name, i, s.Address, p, podPorts)
			}
		}
	}
	if !found {
		t.Errorf("no upstream server in the ConfigMap has address %s:PORT, the backend Service's name", host)
	}
}
