// A vSphere API simulator for the tests of the vsphere backend, built from
// Debian's govmomi (github.com/vmware/govmomi/simulator): a vCenter (default)
// or a standalone ESX host (-esx) on loopback, with TLS and the storage
// policy (PBM) endpoint. Its TLS certificate is made at start for 127.0.0.1
// (ECDSA P-256: Go's built-in test certificate is too weak for OpenSSL) and
// written, PEM-encoded, to the file -cacert names. It prints its URL on the
// first line of its output and serves until SIGTERM. GET /vcsim/requests
// answers how many requests it has served (SOAP, PBM and datastore files),
// for the tests that count a client's round trips. POST
// /vcsim/heartbeat?uuid=<BIOS uuid>&status=green|red|gray sets the guest
// heartbeat that VMware Tools would report for a VM (the simulator has no
// guest), for the tests of fencing.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"io/ioutil"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	_ "github.com/vmware/govmomi/pbm/simulator"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// tools gives every VM the guest heartbeat of a guest without VMware Tools
// (gray), as vCenter does: the simulator leaves it unset, and a read of an
// unset property makes it fail.
type tools struct{}

func (tools) Reference() types.ManagedObjectReference {
	return types.ManagedObjectReference{Type: "vcsimTools", Value: "tools"}
}

func (tools) PutObject(obj mo.Reference) {
	if vm, ok := obj.(*simulator.VirtualMachine); ok && vm.GuestHeartbeatStatus == "" {
		vm.GuestHeartbeatStatus = types.ManagedEntityStatusGray
	}
}

func (tools) UpdateObject(mo.Reference, []types.PropertyChange) {}

func (tools) RemoveObject(types.ManagedObjectReference) {}

// heartbeat sets a VM's guestHeartbeatStatus; false if no VM has the uuid.
func heartbeat(uuid, status string) bool {
	for _, entity := range simulator.Map.All("VirtualMachine") {
		vm := entity.(*simulator.VirtualMachine)
		if vm.Config != nil && vm.Config.Uuid == uuid {
			simulator.Map.Update(vm, []types.PropertyChange{
				{Name: "guestHeartbeatStatus", Val: types.ManagedEntityStatus(status)}})
			return true
		}
	}
	return false
}

// certificate makes a self-signed certificate for 127.0.0.1 and localhost.
func certificate(caFile string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	template := x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "vcsim"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, &template, &template, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	if caFile != "" {
		encoded := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		if err := ioutil.WriteFile(caFile, encoded, 0644); err != nil {
			return tls.Certificate{}, err
		}
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

func main() {
	esx := flag.Bool("esx", false, "simulate a standalone ESX host instead of a vCenter")
	listen := flag.String("l", "127.0.0.1:0", "address to listen on")
	caFile := flag.String("cacert", "", "write the server's certificate (PEM) to this file")
	flag.Parse()

	cert, err := certificate(*caFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vcsim:", err)
		os.Exit(1)
	}

	model := simulator.VPX()
	if *esx {
		model = simulator.ESX()
	}
	defer model.Remove()
	if err := model.Create(); err != nil {
		fmt.Fprintln(os.Stderr, "vcsim:", err)
		os.Exit(1)
	}
	for _, entity := range simulator.Map.All("VirtualMachine") {
		tools{}.PutObject(entity)
	}
	simulator.Map.AddHandler(tools{})
	model.Service.RegisterEndpoints = true
	model.Service.Listen = &url.URL{Host: *listen}
	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	server := model.Service.NewServer()
	// Nobody knows the URL yet, so no request is being served while the handler changes.
	var served int64
	handler := server.Config.Handler
	server.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/vcsim/requests" {
			fmt.Fprintln(w, atomic.LoadInt64(&served))
			return
		}
		if r.URL.Path == "/vcsim/heartbeat" && r.Method == http.MethodPost {
			if !heartbeat(r.URL.Query().Get("uuid"), r.URL.Query().Get("status")) {
				http.NotFound(w, r)
			}
			return
		}
		atomic.AddInt64(&served, 1)
		handler.ServeHTTP(w, r)
	})
	fmt.Println(server.URL.String())

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
	server.Close()
}
