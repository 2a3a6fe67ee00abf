// A vSphere API simulator for the tests of the vsphere backend, built from
// Debian's govmomi (github.com/vmware/govmomi/simulator): a vCenter (default)
// or a standalone ESX host (-esx) on loopback, with TLS and the storage
// policy (PBM) endpoint. It prints its URL on the first line of its output
// and serves until SIGTERM.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	_ "github.com/vmware/govmomi/pbm/simulator"
	"github.com/vmware/govmomi/simulator"
)

func main() {
	esx := flag.Bool("esx", false, "simulate a standalone ESX host instead of a vCenter")
	listen := flag.String("l", "127.0.0.1:0", "address to listen on")
	flag.Parse()

	model := simulator.VPX()
	if *esx {
		model = simulator.ESX()
	}
	defer model.Remove()
	if err := model.Create(); err != nil {
		fmt.Fprintln(os.Stderr, "vcsim:", err)
		os.Exit(1)
	}
	model.Service.RegisterEndpoints = true
	model.Service.Listen = &url.URL{Host: *listen}
	model.Service.TLS = new(tls.Config)
	server := model.Service.NewServer()
	fmt.Println(server.URL.String())

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
	server.Close()
}
